"""Data sets: synthetic scenes, crater label readers, bi-temporal patch sets and loaders."""
