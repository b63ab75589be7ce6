"""The daily monitor: database (`db`), blob catalog (`catalog`), notifications (`notify`),
HTML reports (`report`) and the job that ties them together (`runner`).

Submodules are imported on demand so that importing `blobwatch.monitor` stays cheap.
"""
