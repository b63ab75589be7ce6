"""The review web app (``blobwatch serve``): see `blobwatch.web.app.create_app`.

Modules: `app` (routes and pages), `queries` (database -> view objects), `pixels` (image arrays
by database id), `render` (PNG figures), `downloads` (catalog ECSV and mask), `security`
(write token and CSRF).
"""

from blobwatch.web.app import create_app

__all__ = ["create_app"]
