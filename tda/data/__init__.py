"""Datasets: the small world, FTRACE (TREx analogue and SYNTH), XSum poisoning."""
