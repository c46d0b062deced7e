"""Operations: the command line and the self-scaling pool."""
