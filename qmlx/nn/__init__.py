"""Neural network building blocks and models (torch)."""
