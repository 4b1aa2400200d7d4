"""Simulator adapters; MetaDrive is imported only inside these modules' functions."""
