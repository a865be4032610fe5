"""cost-predictor: token counts, prices and cost estimates for candidate models."""
