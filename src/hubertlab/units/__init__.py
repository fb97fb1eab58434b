"""hubertlab.units"""
