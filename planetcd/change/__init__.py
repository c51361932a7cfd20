"""Change detection between a pre and a post image (Saha & Zhu's patch method and baselines)."""
