"""Kubeclassify's model server: ResNet50 (or your own classifier) over HTTP."""
