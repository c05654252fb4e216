"""Running modelbench on platforms that scale it out (Ray Serve: ray_app.py).
Nothing here is imported by the rest of the package."""
