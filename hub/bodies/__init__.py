"""Request bodies read within bounds: the whole body (in size and in time), and multipart
forms parsed from what was read. Shared by the hub's app and the providers' emulators."""
