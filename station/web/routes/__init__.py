"""The web interface's pages, one module per area; each has ``register(app, web)``.

``station.web.app.ROUTES`` lists them in order; a new area is a new module here plus one line
there (and a link in ``templates/base.html`` if it belongs in the menu).
"""
