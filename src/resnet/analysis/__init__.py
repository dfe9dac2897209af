"""Analyses of the paper: complexity (Table 1), layer responses (Fig. 7), curves and tables."""
