"""Lessons as data (lesson_files.py) and the headless checks of their claims (checks.py)."""
