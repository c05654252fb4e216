"""The HTTP routes, one module per resource; ``generation`` holds the path
they share for generating text."""
