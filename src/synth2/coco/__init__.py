"""COCO-format data for the coco profile: dataset.py reads and splits it, concepts.py finds class mentions."""
