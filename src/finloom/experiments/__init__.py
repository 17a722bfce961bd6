"""Studies that use several stage families (pretrain and eval): the forgetting experiment, the mix search."""
