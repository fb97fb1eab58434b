"""hubertlab.evaluate"""
