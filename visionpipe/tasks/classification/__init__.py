"""Image classification (defect grade, rotten or healthy produce, scrap material): class folders
or a labels table, a stratified split, cross-entropy with optional class weights, sklearn
metrics, confusion matrices and one-vs-rest curves."""
