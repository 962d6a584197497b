"""The incident page on the admin port: /incidents and /incidents/{id}, drawn by the
server (HTML and an SVG chart, no script, no build step, nothing from a CDN)."""
