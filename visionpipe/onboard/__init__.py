"""Starting on your own data: recognise a folder's layout and write the params that read it."""
