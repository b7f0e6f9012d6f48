"""Allwinner sun6i DMA controller (and the reset line its driver needs) for cosim."""
