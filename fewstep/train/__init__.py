"""Training: the loop (:func:`fewstep.train.loop.train`), the EMA, precision, progress and the
resumable state. ``fewstep train`` and Python users start runs through :func:`fewstep.api.train_recipe`,
which picks the run directory, builds the components and draws sample grids through a callback."""
