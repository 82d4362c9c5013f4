"""Model loading lives here and nowhere else: locating files, verifying them, building runtimes."""
