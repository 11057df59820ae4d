"""Object detection with a per-box state: data, model, evaluation, drawing and EDA."""
