"""The method: the SAE architectures (`saes/`), the HierarchicalSAE's schedules, stages and
mechanisms, the trainer (`train.py`, one SAE; `train_many.py`, shared passes) and the export format."""
