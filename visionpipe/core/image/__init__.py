"""The train, evaluate and export stages of the tasks with one output per image (classification,
regression), each in its own module so a stage imports only its own code."""
