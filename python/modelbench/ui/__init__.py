"""The web page at ``/ui``: static HTML, CSS and ES modules (package data,
no build step) over the public HTTP API; ``mount.install_ui`` serves them."""
