"""Technician and developer command line of hushlight (`hushlight ...`)."""
