"""Deployment artifacts rendered from localseek configs."""
