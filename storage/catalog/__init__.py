"""The model catalog: models, prices and price versions."""
