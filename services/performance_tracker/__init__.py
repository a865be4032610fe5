"""performance-tracker: what each model really delivers."""
