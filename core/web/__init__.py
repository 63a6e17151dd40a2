"""The pages' foundation, shared by every role: static files at /static/ (assets.py), the
language of a request and the message catalogues (i18n.py), pages rendered in that language
with the shared header (pages.py). The browser side is plain ES modules and CSS in static/,
no build step; browser libraries come from the npm registry at set-up (package.json)."""
