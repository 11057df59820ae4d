"""Image regression (plant biomass, defect probability): a numeric target per image from a table
beside the images, a split grouped by plant, RMSE / MAE / R2 in the target's own units."""
