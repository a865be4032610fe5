"""selector: chooses the model for each task."""
