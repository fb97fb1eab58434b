"""hubertlab.features"""
