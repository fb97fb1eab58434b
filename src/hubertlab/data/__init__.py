"""hubertlab.data"""
