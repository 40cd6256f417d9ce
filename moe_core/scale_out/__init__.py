"""Scale-out: expert parallelism over torch.distributed, its traffic model, launcher and benchmark."""
