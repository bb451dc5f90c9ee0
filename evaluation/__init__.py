"""What --test measures: accuracy, reverse accuracy and FID of generated images, the evaluation classifier, results files."""
