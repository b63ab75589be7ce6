"""The review web app (``blobwatch serve``): see `blobwatch.web.app.create_app`.

Modules: `app` (the factory: state, middleware, error pages), `state` (the routers' shared
`AppState` and dependencies), `templating` (pages' templates and context), the routers
`routes_pages`, `routes_figures`, `routes_downloads`, `routes_actions` and `routes_api`,
`queries` (database -> view objects), `pixels` (image arrays by database id), `render` (PNG
figures), `viewer` (the pixel viewer's Bokeh figure), `downloads` (catalog ECSV, mask, regions),
`cache` (made-once values), `samp` (DS9 over SAMP), `security` (Host allow-list, write token,
CSRF, CSP).
"""

from blobwatch.web.app import create_app

__all__ = ["create_app"]
