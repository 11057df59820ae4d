"""Detection with a state per part (bike parts intact / damaged / absent / occluded; EL module
cells): COCO annotations, Faster R-CNN with a per-box state head, COCO mAP and state accuracy."""
