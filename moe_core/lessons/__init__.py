"""Lessons as data: what a lesson is (lesson.py), its file format (lesson_files.py) and the headless checks
of its claims (checks.py)."""
