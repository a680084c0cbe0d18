"""Raw media, landmarks, preprocessing and training records."""
