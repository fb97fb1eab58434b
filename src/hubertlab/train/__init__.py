"""hubertlab.train"""
