"""What training needs besides the method: augmentation, a weight average, precision per device,
torchrun, a step's memory per GPU, the device and seeds, files written atomically."""
