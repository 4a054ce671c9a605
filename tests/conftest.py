import torch

# Two cores are shared by everything on the CI machine; one thread keeps tests predictable.
torch.set_num_threads(1)
