"""Raw inputs -> manifests: a folder of class folders, and the embedded elpv default."""
