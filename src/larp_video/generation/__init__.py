"""Turning a trained generator's tokens into video files: sampling, frame prediction, grids."""
