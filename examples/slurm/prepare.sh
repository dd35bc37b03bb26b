#!/usr/bin/env bash
# Makes the dataset that examples/slurm/segment_array.sbatch segments: one image
# `image_NNN` per .npy file of a folder (uint16, dimensions c,y,x), in file-name order.
#
#   bash examples/slurm/prepare.sh /shared/project/cells.zarr /shared/project/raw/
#
# Re-running it adds only the images not yet there.
set -euo pipefail
dataset=${1:?usage: prepare.sh DATASET FOLDER_OF_NPY}
folder=${2:?usage: prepare.sh DATASET FOLDER_OF_NPY}
sz=${SPATIALZARR:-spatialzarr}

[[ -e "$dataset/zarr.json" ]] || "$sz" init "$dataset"
present=$("$sz" ls "$dataset")
n=0
for file in "$folder"/*.npy; do
    image=$(printf 'image_%03d' "$n")
    n=$((n + 1))
    if grep -qx "images	$image" <<<"$present"; then
        continue
    fi
    "$sz" add-image "$dataset" "$image" --npy "$file" --dims c,y,x
done
echo "$n images; submit: sbatch --array=0-$((n - 1)) examples/slurm/segment_array.sbatch $dataset"
