"""The names of the app's views, shared by the UI, lesson files and their validator."""

VIEW_TITLES = {
    "routing_map": "Routing map",
    "load": "Expert load",
    "buffers": "Capacity buffers",
    "probabilities": "Router probabilities",
    "curves": "Training curves",
    "specialization": "Specialization",
    "cost": "Sparsity and cost",
    "language": "Characters by expert",
    "scaling": "Scaling out",
    "memory": "Memory vs compute",  # real models' configs (moe_core.real_models.model_memory), not the trained model
}
