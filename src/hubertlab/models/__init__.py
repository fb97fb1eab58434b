"""hubertlab.models"""
