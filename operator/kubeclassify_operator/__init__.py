"""Kubeclassify operator: runs image classifiers declared as ImageClassifier resources."""
