"""Prometheus scrape configuration and alert rules for localseek."""
