"""What trained models show about chemistry: statistics of comparisons between groups of atoms
and rings."""
