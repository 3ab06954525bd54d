"""cyclediff.serve: an HTTP edit service on Ray Serve (install with `pip install 'cyclediff[serve]'`)."""
