"""The paper's tables and figures from results.json files and test grids, without TensorFlow (but Figure 4)."""
